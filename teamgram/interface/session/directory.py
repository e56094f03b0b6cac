"""What services need from the session layer, wherever its processes run.

bff handlers and domain services reach the devices of users through this one
interface: bind or revoke an auth key's user on sign-in and sign-out, push an
``Updates`` to a user's live sessions, ask who is connected. In the embedded
default the :class:`~teamgram.interface.session.host.SessionHost` itself is the
directory. In split mode (#9) a client will implement it by finding the session
instances that hold a user's keys (``teamgram.service.status.routes``) and
calling them over ``teamgram.infra.rpc``; this seam is where that cut goes.
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
        """A sign-in (or sign-out, None) on a key reaches all its sessions at once."""

    def revoke_key(self, auth_key_id: int) -> None:
        """The key's authorization was reset: its sessions are signed out at once."""

    def online(self, user_id: int) -> bool:
        """The user has a session (connected now, or kept for resending)."""

    def connected_among(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` with a connection now (channel audiences)."""

    def key_activity(self, auth_key_id: int) -> tuple[float, str] | None:
        """(last request time, client address) of a key's live sessions, if any."""
