"""Modular exponentiation for the handshake's 2048-bit operations.

Python's ``pow`` takes ~25 ms for a 2048-bit DH step here and holds the GIL the
whole time (a big-int pow never yields), which would stall every other
connection. gmpy2 (GMP) does the same in ~3 ms and releases the GIL, so the
host can run handshake steps in a thread.
"""

from __future__ import annotations

try:
    import threading

    import gmpy2

    # gmpy2 contexts are per thread: set the GIL-releasing one in each calling thread.
    _local = threading.local()

    def powmod(base: int, exp: int, mod: int) -> int:
        if not getattr(_local, "ready", False):
            gmpy2.set_context(gmpy2.context(allow_release_gil=True))
            _local.ready = True
        return int(gmpy2.powmod(gmpy2.mpz(base), gmpy2.mpz(exp), gmpy2.mpz(mod)))

    HAVE_GMP = True
except ImportError:  # pragma: no cover - gmpy2 is a dependency; kept for odd platforms

    def powmod(base: int, exp: int, mod: int) -> int:
        return pow(base, exp, mod)

    HAVE_GMP = False
