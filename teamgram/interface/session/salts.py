"""Server salts derived from a server secret: no storage, same answer in every process.

salt(key, window) = HMAC-SHA256(secret, auth_key_id | window)[:8]. A salt is valid
for its window, the previous one (grace for in-flight messages) and the next one
(clients that already fetched future salts).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path


class SaltSchedule:
    def __init__(self, secret: bytes, lifetime: int = 3600) -> None:
        self.secret = secret
        self.lifetime = lifetime

    @classmethod
    def from_data_dir(cls, data_dir: Path, lifetime: int = 3600) -> SaltSchedule:
        path = data_dir / "salt_secret"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(os.urandom(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return cls(path.read_bytes(), lifetime)

    def window(self, now: float) -> int:
        return int(now) // self.lifetime

    def salt(self, auth_key_id: int, window: int) -> int:
        digest = hmac.new(self.secret, struct.pack("<qq", auth_key_id, window), hashlib.sha256)
        return struct.unpack_from("<q", digest.digest())[0]

    def current(self, auth_key_id: int, now: float) -> int:
        return self.salt(auth_key_id, self.window(now))

    def valid(self, auth_key_id: int, salt: int, now: float) -> bool:
        w = self.window(now)
        return salt in (
            self.salt(auth_key_id, w),
            self.salt(auth_key_id, w - 1),
            self.salt(auth_key_id, w + 1),
        )

    def future(self, auth_key_id: int, now: float, num: int) -> list[tuple[int, int, int]]:
        """(valid_since, valid_until, salt) for the current and following windows."""
        w = self.window(now)
        out = []
        for i in range(num):
            since = (w + i) * self.lifetime
            out.append((since, since + self.lifetime, self.salt(auth_key_id, w + i)))
        return out


class CachedSalts:
    """Per-session view of the schedule that hashes at most once per window."""

    __slots__ = ("_current", "_key", "_sched", "_valid", "_window")

    def __init__(self, sched: SaltSchedule, auth_key_id: int) -> None:
        self._sched = sched
        self._key = auth_key_id
        self._window = -1
        self._current = 0
        self._valid: frozenset[int] = frozenset()

    def _refresh(self, now: float) -> None:
        w = self._sched.window(now)
        if w != self._window:
            s = self._sched.salt
            self._window = w
            self._current = s(self._key, w)
            self._valid = frozenset((self._current, s(self._key, w - 1), s(self._key, w + 1)))

    def ok(self, salt: int, now: float) -> bool:
        self._refresh(now)
        return salt in self._valid

    def current(self, now: float) -> int:
        self._refresh(now)
        return self._current

    def future(self, now: float, num: int) -> list[tuple[int, int, int]]:
        return self._sched.future(self._key, now, num)
