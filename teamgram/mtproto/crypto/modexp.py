"""Modular exponentiation for the handshake's 2048-bit operations.

Python's ``pow`` takes ~25 ms for a 2048-bit DH step here and holds the GIL the
whole time (a big-int pow never yields), which would stall every other
connection. gmpy2 (GMP) does the same in ~3 ms and releases the GIL, so the
host can run handshake steps in a thread.
"""

from __future__ import annotations

try:
    import gmpy2

    _ctx = gmpy2.get_context()
    _ctx.allow_release_gil = True

    def powmod(base: int, exp: int, mod: int) -> int:
        return int(gmpy2.powmod(gmpy2.mpz(base), gmpy2.mpz(exp), gmpy2.mpz(mod)))

    HAVE_GMP = True
except ImportError:  # pragma: no cover - gmpy2 is a dependency; kept for odd platforms

    def powmod(base: int, exp: int, mod: int) -> int:
        return pow(base, exp, mod)

    HAVE_GMP = False
