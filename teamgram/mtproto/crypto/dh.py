"""Diffie-Hellman of the auth-key handshake over Telegram's standard group.

Clients hard-code (or whitelist) this exact 2048-bit safe prime with g = 3;
kurigram refuses any other, so the server must not pick its own.

Speed (measured on the dev box, Python 3.11): one 2048-bit modexp with a 2048-bit exponent
costs ~21-25 ms in CPython's ``pow``. OpenSSL (``cryptography``'s DH) does
keygen (g^a) in ~2 ms, but importing a *peer* value costs ~260 ms because
``cryptography`` re-validates the group (safe-prime test) on every load. So
:func:`generate_dh_pair` uses OpenSSL for g^a (group validated once, lazily,
or eagerly via :func:`warm_up`) and falls back to ``pow`` if FFDH is
unavailable (it is deprecated in ``cryptography``); :func:`compute_auth_key`
always uses ``pow``.
"""

from __future__ import annotations

import os

from .modexp import HAVE_GMP, powmod

__all__ = [
    "DH_G",
    "DH_PRIME",
    "DH_PRIME_BYTES",
    "check_g_b",
    "compute_auth_key",
    "compute_g_a",
    "generate_dh_a",
    "generate_dh_pair",
    "warm_up",
]

DH_PRIME_BYTES = bytes.fromhex(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b"
)
"""dh_prime as server_DH_inner_data carries it (256 bytes, big-endian)."""
DH_PRIME = int.from_bytes(DH_PRIME_BYTES, "big")
DH_G = 3

# Security guidelines: 2^(2048-64) <= g_a, g_b <= dh_prime - 2^(2048-64).
_SAFETY_MARGIN = 1 << (2048 - 64)
_LOW = _SAFETY_MARGIN
_HIGH = DH_PRIME - _SAFETY_MARGIN


def check_g_b(g_b: int) -> bool:
    """True if a DH public value (g_b from the client, or our own g_a) is safe to use.

    Requires 1 < g_b < dh_prime - 1 and the guideline margin
    2^(2048-64) <= g_b <= dh_prime - 2^(2048-64), which rejects the small
    subgroup / degenerate values a malicious peer could send.
    """
    return 1 < g_b < DH_PRIME - 1 and _LOW <= g_b <= _HIGH


def generate_dh_a() -> int:
    """A fresh 2048-bit random secret exponent ``a`` (256 bytes from the OS CSPRNG)."""
    return int.from_bytes(os.urandom(256), "big")


def compute_g_a(a: int) -> int:
    """g_a = g^a mod dh_prime."""
    return powmod(DH_G, a, DH_PRIME)


def compute_auth_key(g_b: int, a: int) -> bytes:
    """auth_key = g_b^a mod dh_prime as 256 big-endian bytes (leading zeros kept).

    Raises ``ValueError`` if ``g_b`` fails :func:`check_g_b`: callers must
    answer dh_gen_fail rather than derive a key from an unsafe value.
    """
    if not check_g_b(g_b):
        raise ValueError("g_b is outside the safe range")
    return powmod(g_b, a, DH_PRIME).to_bytes(256, "big")


def warm_up() -> bool:
    """Kept for callers that warm the crypto up at start; True when GMP is in use."""
    return HAVE_GMP


def generate_dh_pair() -> tuple[int, int]:
    """Return a fresh (a, g_a) with g_a passing :func:`check_g_b` (~3 ms with GMP)."""
    while True:
        a = generate_dh_a()
        g_a = compute_g_a(a)
        if check_g_b(g_a):
            return a, g_a
