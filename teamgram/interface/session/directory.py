"""What services need from the session layer, wherever its processes run.

bff handlers and domain services reach the devices of users through this one
interface: bind or revoke an auth key's user on sign-in and sign-out, push an
``Updates`` to a user's live sessions, ask who is connected. In the embedded
default the :class:`~teamgram.interface.session.host.SessionHost` itself is the
directory. In split mode (#9) :class:`~teamgram.interface.session.cluster.ClusterDirectory`
implements it: the local host for this process's sessions, and the session
instances that hold a user's other keys (found in ``teamgram.service.status.routes``)
called over ``teamgram.infra.rpc``.

Pushes, binds and revokes are synchronous: they queue work (remote parts go in
the background, batched). The questions (who is online, a key's activity) are
async, because in split mode they read Redis or ask other processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class SessionDirectory(Protocol):
    def push_to_user(
        self,
        user_id: int,
        updates: Any,
        exclude: Any = None,
        exclude_key: int | None = None,
    ) -> None:
        """Queue ``updates`` for every live session of the user. ``exclude``: the
        calling session (an opaque handle, ``RequestContext.session``); ``exclude_key``:
        every session of that device's auth key."""

    def push_to_key(self, auth_key_id: int, updates: Any) -> None:
        """Queue ``updates`` for every session of one auth key (signed in or not)."""

    def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        """A sign-in (or sign-out, None) on a key reaches all its sessions (this
        process's at once, other processes' within a round trip)."""

    def revoke_key(self, auth_key_id: int) -> None:
        """The key's authorization was reset: its sessions are signed out (as bind_user)."""

    async def online(self, user_id: int) -> bool:
        """The user has a session: embedded, connected now or kept for resending;
        split mode, connected now on some session process."""
        ...

    async def connected_among(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` with a connection now (channel audiences)."""
        ...

    async def key_activity(self, auth_key_id: int) -> tuple[float, str] | None:
        """(last request time, client address) of a key's live sessions, if any."""
        ...
