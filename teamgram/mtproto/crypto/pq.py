"""The proof-of-work challenge of ``resPQ``: pq = p * q with two random primes.

Both factors are drawn from [2^30, 2^31): they stay below 2^32 (kurigram
rejects larger factors), pq lands in [2^60, 2^62) so it is always 8 bytes
big-endian like Telegram's own challenges and fits a signed int64 for clients
that factor it in a Java ``long``, and Pollard-rho on the client side needs
about sqrt(p) ~ 2^15.5 steps, i.e. milliseconds.
"""

from __future__ import annotations

import secrets

__all__ = ["bytes_to_int_be", "generate_pq", "int_to_bytes_be", "is_prime_u32"]

_PQ_LOW = 1 << 30
_PQ_HIGH = 1 << 31
_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61)


def is_prime_u32(n: int) -> bool:
    """Deterministic primality test for 0 <= n < 2^32 (Miller-Rabin, bases 2, 7, 61).

    Those three bases are exact for every n < 4,759,123,141 > 2^32.
    """
    if n >= 1 << 32:
        raise ValueError("is_prime_u32 is only exact below 2^32")
    if n < 2:
        return False
    for sp in _SMALL_PRIMES:
        if n % sp == 0:
            return n == sp
    d = n - 1
    s = 0
    while not d & 1:
        d >>= 1
        s += 1
    for a in (2, 7, 61):
        y = pow(a, d, n)
        if y == 1 or y == n - 1:
            continue
        for _ in range(s - 1):
            y = y * y % n
            if y == n - 1:
                break
        else:
            return False
    return True


def _random_prime(low: int, high: int) -> int:
    """A uniformly chosen prime in [low, high) (rejection sampling over odd numbers)."""
    span = high - low
    while True:
        candidate = (low + secrets.randbelow(span)) | 1
        if candidate < high and is_prime_u32(candidate):
            return candidate


def generate_pq() -> tuple[int, int, int]:
    """Return (pq, p, q) with p < q distinct random primes in [2^30, 2^31)."""
    p = _random_prime(_PQ_LOW, _PQ_HIGH)
    while True:
        q = _random_prime(_PQ_LOW, _PQ_HIGH)
        if q != p:
            break
    if p > q:
        p, q = q, p
    return p * q, p, q


def int_to_bytes_be(x: int) -> bytes:
    """Minimal unsigned big-endian bytes of ``x`` (what TL ``bytes`` fields pq/p/q/g_a want).

    0 maps to b"" (zero-length minimal encoding).
    """
    if x < 0:
        raise ValueError("int_to_bytes_be needs a non-negative integer")
    return x.to_bytes((x.bit_length() + 7) >> 3, "big")


def bytes_to_int_be(data: bytes) -> int:
    """Unsigned big-endian bytes -> int (inverse of :func:`int_to_bytes_be`)."""
    return int.from_bytes(data, "big")
