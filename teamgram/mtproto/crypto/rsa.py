"""The server's RSA-2048 key and server-side decryption of ``req_DH_params.encrypted_data``.

Clients encrypt ``p_q_inner_data*`` with raw (unpadded) RSA in one of two schemes:

* RSA_PAD (mtcute, official apps; https://core.telegram.org/mtproto/auth_key
  step 4.1): RSA(temp_key_xor || AES256_IGE(reversed(data_with_padding) ||
  SHA256(temp_key || data_with_padding), temp_key, iv=0)).
* the older one (Telethon, kurigram, GramJS): RSA(SHA1(data) || data ||
  random padding), a 255-byte number.

``cryptography`` has no unpadded RSA, so the private operation is CPython
``pow`` with the CRT split (~3.5x faster than a plain ``pow(c, d, n)``) and
RSA blinding, because ``pow`` is not constant-time and the ciphertext is
attacker-chosen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import secrets
import stat
from dataclasses import dataclass, field
from hashlib import sha1, sha256

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

from .aes import decrypt_ige
from .kdf import ct_eq
from .modexp import powmod

__all__ = [
    "RSA_KEY_BITS",
    "InnerData",
    "ServerKey",
    "compute_fingerprint",
    "decrypt_inner_data",
    "decrypt_old_scheme",
    "decrypt_rsa_pad",
    "generate_server_key",
    "load_or_create_server_key",
    "load_server_key",
    "old_scheme_check",
    "old_scheme_split",
    "rsa_pad_unwrap",
    "tl_serialize_bytes",
]

log = logging.getLogger(__name__)

RSA_KEY_BITS = 2048
_BLOCK = RSA_KEY_BITS // 8  # 256
_PUBLIC_EXPONENT = 65537
_U64 = (1 << 64) - 1
_ZERO_IV = bytes(32)


def tl_serialize_bytes(data: bytes) -> bytes:
    """TL ``bytes``: 1 length byte (< 254) or 0xfe + 3-byte LE length, data, zero pad to 4."""
    n = len(data)
    if n < 254:
        head = bytes((n,))
    else:
        head = b"\xfe" + n.to_bytes(3, "little")
    out = head + data
    return out + bytes(-len(out) % 4)


def _int_be(x: int) -> bytes:
    return x.to_bytes((x.bit_length() + 7) >> 3, "big")


def compute_fingerprint(n: int, e: int) -> int:
    """Telegram's RSA key fingerprint, as the wire carries it (signed int64).

    The lower 64 bits of SHA1(TL bytes(n) + TL bytes(e)), n and e in minimal
    big-endian form: the last 8 digest bytes read little-endian, signed.
    """
    digest = sha1(tl_serialize_bytes(_int_be(n)) + tl_serialize_bytes(_int_be(e))).digest()
    return int.from_bytes(digest[12:], "little", signed=True)


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One RSA-2048 server key, with the CRT values the private operation needs."""

    private_key: _rsa.RSAPrivateKey = field(repr=False, compare=False)
    n: int = field(repr=False)
    e: int
    fingerprint: int
    """Signed int64, as in ``req_DH_params.public_key_fingerprint`` / ``resPQ``."""
    _p: int = field(repr=False, compare=False)
    _q: int = field(repr=False, compare=False)
    _dp: int = field(repr=False, compare=False)
    _dq: int = field(repr=False, compare=False)
    _qinv: int = field(repr=False, compare=False)

    @classmethod
    def from_private_key(cls, key: _rsa.RSAPrivateKey) -> ServerKey:
        """Wrap a ``cryptography`` RSA key; it must be 2048 bits (256-byte blocks)."""
        if key.key_size != RSA_KEY_BITS:
            raise ValueError(f"server RSA key must be {RSA_KEY_BITS} bits, got {key.key_size}")
        numbers = key.private_numbers()
        pub = numbers.public_numbers
        return cls(
            private_key=key,
            n=pub.n,
            e=pub.e,
            fingerprint=compute_fingerprint(pub.n, pub.e),
            _p=numbers.p,
            _q=numbers.q,
            _dp=numbers.dmp1,
            _dq=numbers.dmq1,
            _qinv=numbers.iqmp,
        )

    @property
    def fingerprint_unsigned(self) -> int:
        """The fingerprint as an unsigned 64-bit int (what clients print in hex)."""
        return self.fingerprint & _U64

    def public_pem(self) -> str:
        """PKCS#1 public key PEM (``-----BEGIN RSA PUBLIC KEY-----``), the form clients embed."""
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode("ascii")
        )

    def private_pem(self) -> bytes:
        """PKCS#1 private key PEM (``-----BEGIN RSA PRIVATE KEY-----``), unencrypted."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def decrypt_raw(self, encrypted_data: bytes) -> bytes | None:
        """Raw RSA private operation: 256 bytes in, 256 big-endian bytes out.

        None if the input is not 256 bytes or, as a big-endian integer, is
        not below the modulus (the spec makes clients retry such values).
        """
        if len(encrypted_data) != _BLOCK:
            return None
        c = int.from_bytes(encrypted_data, "big")
        n = self.n
        if c >= n:
            return None
        # Blinding: decrypt c * r^e instead of c so timing does not depend on c.
        while True:
            r = secrets.randbelow(n - 2) + 2
            try:
                r_inv = pow(r, -1, n)
            except ValueError:  # r shares a factor with n: astronomically unlikely
                continue
            break
        cb = c * pow(r, self.e, n) % n
        p, q = self._p, self._q
        m1 = powmod(cb, self._dp, p)
        m2 = powmod(cb, self._dq, q)
        m = (m2 + (m1 - m2) * self._qinv % p * q) * r_inv % n
        return m.to_bytes(_BLOCK, "big")


# --------------------------------------------------------------------------- schemes


def rsa_pad_unwrap(key_aes_encrypted: bytes) -> bytes | None:
    """Undo RSA_PAD on the 256 decrypted bytes; return the 192-byte data_with_padding or None.

    The TL ``p_q_inner_data*`` object sits at the start of the result,
    followed by the client's random padding.
    """
    if len(key_aes_encrypted) != _BLOCK:
        return None
    temp_key_xor = key_aes_encrypted[:32]
    aes_encrypted = key_aes_encrypted[32:]
    temp_key = (
        int.from_bytes(temp_key_xor, "big") ^ int.from_bytes(sha256(aes_encrypted).digest(), "big")
    ).to_bytes(32, "big")
    data_with_hash = decrypt_ige(aes_encrypted, temp_key, _ZERO_IV)
    data_with_padding = data_with_hash[191::-1]  # un-reverse data_pad_reversed (first 192 bytes)
    if not ct_eq(sha256(temp_key + data_with_padding).digest(), data_with_hash[192:]):
        return None
    return data_with_padding


def old_scheme_split(decrypted: bytes) -> tuple[bytes, bytes] | None:
    """Split a 256-byte old-scheme plaintext into (sha1_hash, data_and_padding).

    The old scheme encrypts a 255-byte number, so the leading byte must be 0
    (else None). The hash covers only the TL object, whose length the caller
    learns by parsing ``data_and_padding``; then check it with
    :func:`old_scheme_check`.
    """
    if len(decrypted) != _BLOCK or decrypted[0] != 0:
        return None
    return decrypted[1:21], decrypted[21:]


def old_scheme_check(sha1_hash: bytes, tl_object: bytes) -> bool:
    """True if SHA1 of exactly the parsed TL object's bytes equals the old-scheme hash."""
    return ct_eq(sha1(tl_object).digest(), sha1_hash)


def decrypt_rsa_pad(key: ServerKey, encrypted_data: bytes) -> bytes | None:
    """RSA-decrypt and undo RSA_PAD; the 192-byte data_with_padding, or None on any failure."""
    raw = key.decrypt_raw(encrypted_data)
    return None if raw is None else rsa_pad_unwrap(raw)


def decrypt_old_scheme(key: ServerKey, encrypted_data: bytes) -> tuple[bytes, bytes] | None:
    """RSA-decrypt an old-scheme block into (sha1_hash, data_and_padding), or None.

    The hash is not checked here: see :func:`old_scheme_split`.
    """
    raw = key.decrypt_raw(encrypted_data)
    return None if raw is None else old_scheme_split(raw)


@dataclass(frozen=True, slots=True)
class InnerData:
    """Decrypted ``req_DH_params`` payload: the TL object at the start of ``data``.

    ``old_sha1`` is None for RSA_PAD (already authenticated) and the
    still-unchecked SHA1 for the old scheme.
    """

    data: bytes
    old_sha1: bytes | None

    @property
    def rsa_pad(self) -> bool:
        """True if the client used RSA_PAD."""
        return self.old_sha1 is None

    def verify(self, object_length: int) -> bool:
        """Call after parsing the TL object: ``object_length`` = bytes it consumed from ``data``."""
        if self.old_sha1 is None:
            return True
        if not 0 < object_length <= len(self.data):
            return False
        return old_scheme_check(self.old_sha1, self.data[:object_length])


def decrypt_inner_data(key: ServerKey, encrypted_data: bytes) -> InnerData | None:
    """Decrypt ``encrypted_data`` once and accept whichever scheme the client used.

    RSA_PAD is tried first (its SHA-256 check is self-contained); otherwise
    the old-scheme split is returned and the caller must call
    :meth:`InnerData.verify` after parsing.
    """
    raw = key.decrypt_raw(encrypted_data)
    if raw is None:
        return None
    data = rsa_pad_unwrap(raw)
    if data is not None:
        return InnerData(data, None)
    split = old_scheme_split(raw)
    if split is None:
        return None
    return InnerData(split[1], split[0])


# --------------------------------------------------------------------------- key files


def generate_server_key() -> ServerKey:
    """Generate an RSA-2048 key whose unsigned fingerprint's top 4 bits are non-zero.

    mtcute looks keys up by hex fingerprint and cannot find one that starts
    with 0, so such keys (1 in 16) are discarded.
    """
    while True:
        key = ServerKey.from_private_key(
            _rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
        )
        if key.fingerprint_unsigned >> 60:
            return key


def load_server_key(path: pathlib.Path) -> ServerKey:
    """Load a PEM private key (PKCS#1 or PKCS#8, unencrypted) written by this module or openssl."""
    path = pathlib.Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("server key %s is accessible by group/others (mode %o)", path, mode & 0o777)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, _rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    server_key = ServerKey.from_private_key(key)
    if not server_key.fingerprint_unsigned >> 60:
        log.warning(
            "server key %s has fingerprint %016x starting with 0: mtcute cannot use it",
            path,
            server_key.fingerprint_unsigned,
        )
    return server_key


def _write_new_file(path: pathlib.Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; FileExistsError if it already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_server_key(path: pathlib.Path) -> ServerKey:
    """Load the key at ``path``, or generate one and store it there (PEM, mode 0600).

    Creation is atomic (temp file + hard link), so concurrent starters agree
    on one key and nobody ever reads a half-written file.
    """
    path = pathlib.Path(path)
    if path.exists():
        return load_server_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_server_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_new_file(tmp, key.private_pem())
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_server_key(path)  # another process won the race
        except OSError:
            # No hard links on this filesystem: fall back to exclusive create.
            try:
                _write_new_file(path, key.private_pem())
            except FileExistsError:
                return load_server_key(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("generated server RSA key %s (fingerprint %016x)", path, key.fingerprint_unsigned)
    return key
