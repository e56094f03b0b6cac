"""Ids of new basic groups and channels: random, and inside the range clients accept.

Clients tell a basic group from a channel by the size of its "marked" id (a chat
is ``-id``, a channel ``-(10**12 + id)``): Telethon reads any marked id past
``-10**12`` as a channel, and TDLib accepts channel ids only below
``10**12 - 2**31``. An id beyond that reads as the other kind of peer, and the
client cannot find it (found by the cluster test: about 1 group in 11 of the
former 40-bit ids was unusable from Telethon).
"""

from __future__ import annotations

import secrets

MAX_PEER_ID = 1_000_000_000_000 - (1 << 31)


def new_peer_id() -> int:
    """A random id in ``[1, MAX_PEER_ID)`` (collisions: n / 10**12)."""
    return secrets.randbelow(MAX_PEER_ID - 1) + 1
